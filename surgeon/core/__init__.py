"""The bottom layer: what every other part uses and nothing here knows about models.

`errors` (`SurgeonError`: one line naming the problem and the fix), `checks` (the one table of
numeric ranges, `ARGS`), `registry` (`Registry`: named tables filled by decorators), `files` (path
checks and atomic writes), `jsonio` (strict JSON), `tables` (tidy rows, `Tabular`), `progress`
(progress bars), `runfolder` (resumable run folders), `text` and `version`. Imports nothing else
from surgeon.
"""

from surgeon.core import errors, text, version, jsonio, files, progress, registry, checks, tables, runfolder  # noqa: F401  (each module is an attribute of the package)
