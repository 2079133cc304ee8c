"""The frozen language model: presets, offline weights, the HF view for peft, chat formats."""
