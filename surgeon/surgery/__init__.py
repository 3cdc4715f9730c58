"""Surgery: passes that edit a model's blocks, and loading models by name or file.

`passes` (`replace`, `remove`, `insert`, the pass registry `PASSES` and provenance replay),
`shapes` (`check_shapes`: the shapes every pass must keep),
`alternet` (the paper's Conv-to-MSA build-up: `alternate`, `ALTERNETS`), `locality`
(`localize`), `loading` (`load_model`, `load`: a saved file is rebuilt by replaying its passes),
`ensemble` (composite models). Importing this package registers every pass and builder once.
Imports the layers below: `graph`, `layers`, `data`, `model`, `core`.
"""

# every pass and builder registers itself once, when this package is imported
from surgeon.surgery import alternet, ensemble, locality, loading, passes, shapes  # noqa: F401
