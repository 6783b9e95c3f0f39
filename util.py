def add(a, b):
    return a + b


def multiply(a, b):
    """Return a multiplied by b."""
    return a * b
