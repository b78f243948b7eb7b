"""OpenAI-compatible HTTP serving of a trained unified model."""
