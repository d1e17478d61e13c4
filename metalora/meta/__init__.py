"""Meta-learning over LoRA adapters: algorithms (functional core), episodes, and the Accelerate trainer."""
