import math

from geometry.measure import clamp


class Circle:
    """A circle given by its radius.

    Args:
        radius: Distance from the centre to the edge; negative values are clamped to 0.
    """

    def __init__(self, radius):
        self.radius = clamp(radius, 0.0, math.inf)

    def area(self):
        return math.pi * self.radius ** 2

    def scaled(self, factor):
        if factor <= 0:
            raise ValueError("factor must be positive")
        return Circle(self.radius * factor)


def total_area(circles):
    return sum(c.area() for c in circles)
