"""qpatch: per-tensor quantization policies for llama.cpp, as Python rules rendered to C++.

The packages follow the data flow, each importing only from the stages before it (tests/test_layout.py
checks this):

    gguf      ggml types and ftypes, GGUF headers, imatrix files, synthetic models
    policy    the policy data model, its loader and block helpers
    predict   a policy's Python meaning: llama-quantize's options, the plan, its report
    families  one folder per pin family (stock model, catalogue, template); pins.py maps a pin to one
    codegen   a policy rendered to C++ for a family's hook
    checkout  llama.cpp sources, patch sets, the checkout and `apply`
    build     CMake builds of a checkout
    job       one command's request (model, ftype, policy, pin, options), built once
    recipes   plans to and from llama-quantize's own recipe options
    quantize  running llama-quantize and verifying what it wrote
    quality   llama-perplexity evaluation and sweeps
    shelves   one quantization per type, and any mix assembled from them byte for byte
    measure   each tensor group's measured KLD cost (on Dask) and the exact fit to a size budget
    cli       the command line

errors, progress, cache, shipped and files are shared by every stage.
"""

__version__ = "0.1.0"
