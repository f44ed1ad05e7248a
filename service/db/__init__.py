"""Database layer: SQLAlchemy 2 async engine, ORM tables, data-access functions."""
