"""How a layer stack names the parameters of each layer and direction (PyTorch's suffixes)."""


def suffix(k: int, d: int) -> str:
    """The parameter-name suffix of layer k, direction d: _l0, _l0_reverse, _l1, ..."""
    return f"_l{k}" + ("_reverse" if d else "")
