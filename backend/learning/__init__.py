"""The learning loop: the curator and ALFRED's judgement, golden data, fine-tunes (CPU LoRA in
a subprocess; Unsloth on a GPU), blind validation, adoption by swapping a persona's model
pointer, and Ascension on a clone.

Kept light: nothing here imports torch or transformers; only the trainer subprocess
(``backend.learning.worker``) does, so the backend runs without the ``learning`` extra.

Motivator hooks (for ``backend/dialogue/motivator.py``): the curator publishes
``curiosity_deficit`` (``detail["source"] == "judge"``) after repeated low judge scores, and
``finetune_proposed`` when enough new golden examples accumulate; its ``body`` is the
``start_finetune`` command body a goal's approval should send
(``LearningService.start_finetune(**body)``).
"""
