"""Text analysis: word counts, the model protocols and their implementations (ONNX, stand-in)."""
