"""The spec language's fixed vocabulary. The language is a contract: see the README."""
from ..ops import SPEC_FUNCTIONS

KEYWORDS = ("cell", "input", "state", "param", "output", "def")

# Functions of the language that are no op: `chunk(v, n)` splits a vector into n equal parts (the
# builder makes each a view of v); its count is a literal integer, and it is the whole right side
# of a line naming its n parts: `i, f, g, o = chunk(v, 4)`.
CHUNK = "chunk"

# function name -> number of arguments (None: two or more): the ops that name a spec function
# (rnncc/ops/), and chunk. Functions a spec defines (`def`) come on top of these.
FUNCTIONS = {**{name: op.arity for name, op in SPEC_FUNCTIONS.items()}, CHUNK: 2}

# Deeper expressions than this are rejected with a SpecError instead of risking Python's recursion
# limit in the parser or in the passes that walk expressions.
MAX_EXPR_DEPTH = 200

# The suffix a primed name `c'` becomes before Python's parser sees it. User names may not contain
# a double underscore, so it can never collide with a name the user wrote.
PRIME_SUFFIX = "__prime"

# Parameter initialisers (`param W[H, I] = xavier`): name -> (fewest, most) numeric arguments and
# what they are. A number alone is a constant fill. rnncc/runtime/initialise.py draws them.
INITIALISERS = {
    "zeros": ((0, 0), ""),
    "ones": ((0, 0), ""),
    "uniform": ((2, 2), "low, high"),
    "normal": ((2, 2), "mean, std"),
    "xavier": ((0, 1), "gain"),        # Glorot & Bengio 2010, uniform; matrices only
    "orthogonal": ((0, 1), "gain"),    # Saxe et al. 2014; matrices only
}
MATRIX_INITIALISERS = ("xavier", "orthogonal")
