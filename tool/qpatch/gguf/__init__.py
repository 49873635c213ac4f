"""Stage 1, what llama.cpp's files hold: the ggml type and ftype catalogue (catalogue.py), GGUF headers
read without the data region (header.py), the model facts type choice reads from them (model_facts.py),
imatrix files (imatrix.py), and synthetic models written as sparse files (synth.py). Imports no other
stage."""
