"""``misalignment`` (NOTES.md (g)): emergent misalignment after narrow fine-tuning and subliminal
learning through SFT, off-policy and on-policy distillation, on SmolLM2-135M-Instruct with LoRA.

Modules: :mod:`.data` (generated data), :mod:`.judge` (programmatic judges), :mod:`.lm` (batches,
log-probabilities, SFT and distillation steps, sampling), :mod:`.em` (the narrow fine-tune and
its judged checkpoints), :mod:`.sl` (teacher, number data, students by channel), :mod:`.job`
(``junction research misalignment``: claims, report, plots)."""
