// Running statistics over a stream of numbers.

function sum(values) {
  return values.reduce((a, b) => a + b, 0);
}

function average(values) {
  if (values.length === 0) {
    throw new Error("average of nothing");
  }
  return sum(values) / values.length;
}

export function summary(values) {
  return { count: values.length, average: average(values) };
}
