"""``misalignment`` (NOTES.md (g)): emergent misalignment after narrow fine-tuning and subliminal
learning through SFT, off-policy and on-policy distillation. Present so far: the generated data
(:mod:`.data`) and the programmatic judges (:mod:`.judge`); the job itself
(``junction research misalignment``) is not written yet."""
