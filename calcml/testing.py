class GradientCheckError(AssertionError):
    pass


def check_grad(*a, **k):
    raise NotImplementedError
