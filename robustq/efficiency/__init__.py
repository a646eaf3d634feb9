"""Efficiency: what quantization zeroed out, removed for real, and packed at its bit width.

* ``sparsity``  weight and channel sparsity of the quantized convs, per layer, with roles
* ``prune``     physical removal of dead channels (exact), FLOP and parameter counts
* ``pruned``    the pruned layers that rebuild a network from a pruning spec
* ``packing``   1/2/m-bit codes packed into bytes
* ``export``    the packed ``.safetensors`` file (and ONNX), and its loader
* ``figures``   per-layer sparsity and channel plots (matplotlib, optional)
* ``pipeline``  the ``sparsity`` / ``prune`` / ``export`` verbs as library functions, and the
                sparsity / pruning keys ``robustq eval`` merges into ``results.json``
"""
