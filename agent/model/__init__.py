"""The language model: loading (HF id, folder or GGUF; 4-bit on CUDA), candidate labels, compiled forward."""
