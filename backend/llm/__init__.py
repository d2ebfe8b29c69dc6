"""Language models: one ``ModelManager`` over an Ollama backend and an embedded llama.cpp
backend, scheduling calls so that at most one model is loaded at any time."""
