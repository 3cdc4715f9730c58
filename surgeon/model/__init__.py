"""What a model is, before any surgery: its provenance record, input size, outputs and weights.

`provenance` (`SurgeonCfg`, the record a saved file carries), `sizes` (input sizes and channels),
`outputs` (`logits_of`: the logits of any output type), `runtime` (modes restored, device,
step boundaries), `weights` (reading checkpoints; `save` / `read_cfg`), `hf` (Hugging Face
models by ``hf:`` name), `flops`. Imports only `surgeon.core`.
"""

from surgeon.model import provenance, sizes, outputs, runtime, flops, weights, hf  # noqa: F401  (each module is an attribute of the package)
