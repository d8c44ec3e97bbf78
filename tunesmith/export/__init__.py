"""Export a trained run: merged Hugging Face folder (sharded safetensors, tokenizer with the training chat
template, generation config), GGUF files for llama.cpp, an Ollama Modelfile and a model card."""
