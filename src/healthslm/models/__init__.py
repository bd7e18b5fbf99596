"""Model presets (data files in presets/) and loading, including the embedded GGUF model."""
