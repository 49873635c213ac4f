"""Stage 8, recipes: a plan written as llama-quantize's own options, for users of an unpatched binary
(export.py), and such options, or a quantized GGUF's types, turned back into a policy file
(importer.py). Both prove their round trip before they write."""
