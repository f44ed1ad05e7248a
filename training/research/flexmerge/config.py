"""Knobs of the ``flexmerge`` job (NOTES.md (f)).

Grouped by concern:
- merging: the operators compared (``avg``, ``ta``, ``ties``) and their defaults: task
  arithmetic's ``lam`` 0.4 (Ilharco et al. 2023 pick 0.3-0.5 on validation), TIES's top-``k`` 20 %
  and ``lam`` 1 (Yadav et al. 2023's defaults); how many sizes between M x and 1 x are evaluated;
- digits (the faithful cheap setting of NOTES.md (f)): a residual MLP trunk (an input block and
  ``digits_res_blocks`` residual blocks, each a merge block) pre-trained on sklearn's digits, then
  fine-tuned (trunk and a per-task head) on 8 input-transform tasks;
- SmolLM2: SmolLM2-135M-Instruct fine-tuned with LoRA (merged into full weights) on ``llm_tasks``
  generated yes/no tasks over numbers; a merge block is one decoder layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.research.jobs import comma_list


@dataclass
class FlexMergeConfig:
    # merging
    methods: str = field(default="avg,ta,ties", metadata={"help": "merge operators, comma list"})
    ta_lam: float = field(default=0.4, metadata={"help": "task arithmetic scale lambda"})
    ties_lam: float = field(default=1.0, metadata={"help": "TIES scale lambda"})
    ties_k: float = field(default=0.2, metadata={"help": "TIES: top fraction kept per vector"})
    # digits
    digits: bool = field(default=True, metadata={"help": "run the digits setting"})
    digits_width: int = field(default=128, metadata={"help": "trunk width"})
    digits_res_blocks: int = field(default=3, metadata={"help": "residual blocks of the trunk"})
    digits_pretrain_epochs: int = field(default=30, metadata={"help": "pre-training epochs"})
    digits_finetune_epochs: int = field(default=15, metadata={"help": "fine-tuning epochs/task"})
    digits_points: int = field(default=9, metadata={"help": "sizes evaluated, M x to 1 x"})
    # SmolLM2
    llm: bool = field(
        default=False,
        metadata={
            "help": "also run the SmolLM2 setting (LoRA fine-tunes on yes/no tasks, merged "
            "block-wise; results in training/research/results/flexmerge-smollm2/)"
        },
    )
    llm_tasks: str = field(
        default="big,animal,color,fruit", metadata={"help": "yes/no tasks (comma list)"}
    )
    llm_steps: int = field(default=24, metadata={"help": "LoRA steps per task"})
    llm_batch: int = field(default=8, metadata={"help": "fine-tuning batch size"})
    llm_lr: float = field(default=1e-2, metadata={"help": "LoRA learning rate"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_targets: str = field(
        default="v_proj,o_proj,down_proj",
        metadata={"help": "LoRA target modules (not q/k: the GGUF loader permutes them)"},
    )
    lora_layers: int = field(default=8, metadata={"help": "LoRA on the last N decoder layers"})
    llm_eval: int = field(default=16, metadata={"help": "test questions per task"})
    llm_points: int = field(default=5, metadata={"help": "sizes evaluated, M x to 1 x"})

    def method_list(self) -> list[str]:
        return comma_list(self.methods)

    def task_list(self) -> list[str]:
        return comma_list(self.llm_tasks)

    def __post_init__(self) -> None:
        from training.research.flexmerge.merge import METHODS

        bad = [m for m in self.method_list() if m not in METHODS]
        if bad:
            raise ValueError(f"unknown merge methods {bad}; known: {', '.join(METHODS)}")
        if not 0 < self.ties_k <= 1:
            raise ValueError("ties_k must be in (0, 1]")
