"""What the scripted author "writes" in the forge tests: a wrong first attempt, a right one."""

WRONG = """Here is the tool:
```python
def add_numbers(a, b):
    return a - b

def test_adds():
    assert add_numbers(2, 3) == 5

def test_adds_negatives():
    assert add_numbers(-1, -1) == -2
```
"""

RIGHT = '''```python
def add_numbers(a, b):
    """Add two numbers."""
    return a + b

def test_adds():
    assert add_numbers(2, 3) == 5

def test_adds_negatives():
    total = add_numbers(-1, -1)
    assert total == -2
```'''

NO_ASSERT = """```python
def add_numbers(a, b):
    return a + b

def test_exists():
    assert callable(add_numbers)
```"""
