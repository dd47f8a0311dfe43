def clamp(value, low, high):
    return max(low, min(value, high))


def mean(values):
    if not values:
        raise ValueError("mean of nothing")
    return sum(values) / len(values)


def spread(values):
    centre = mean(values)
    return mean([abs(v - centre) for v in values])
