"""`python -m ensemble.member --job J --member I`: the member process the runner starts."""
import sys

from .startup import skip_unused_imports

skip_unused_imports()  # before .process imports the backend

from .process import main  # noqa: E402

sys.exit(main())
