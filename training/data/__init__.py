"""Evaluation data: the log schema, readers for the raw data sets, derived files, the matrix view."""

from training.data.load import load_derived, load_matrix, matrix_from_rows
from training.data.matrix import EvalMatrix
from training.data.schema import EvalRow, LogFormatError, read_log, write_log

__all__ = [
    "EvalMatrix",
    "EvalRow",
    "LogFormatError",
    "load_derived",
    "load_matrix",
    "matrix_from_rows",
    "read_log",
    "write_log",
]
