"""``flexmerge``: block-wise greedy progressive merging of fine-tuned models, from all M models
down to one, at every size between (NOTES.md (f)). See :mod:`.job`; the merge core is :mod:`.merge`.
The SmolLM2 setting (:mod:`.llm`, ``--llm``) is not verified end to end yet, and the gateway side
(merged variants as GGUF files, served and onboarded) is not written yet."""

from training.research.flexmerge.config import FlexMergeConfig
from training.research.flexmerge.merge import FlexMerge, merge_vectors

__all__ = ["FlexMerge", "FlexMergeConfig", "merge_vectors"]
