package demo

// Vec is a 2D vector.
type Vec struct {
	X, Y float64
}

func (v Vec) Dot(w Vec) float64 {
	return v.X*w.X + v.Y*w.Y
}

func (v Vec) Norm() float64 {
	return sqrt(v.Dot(v))
}

func sqrt(x float64) float64 {
	z := x
	for i := 0; i < 20; i++ {
		z -= (z*z - x) / (2 * z)
	}
	return z
}
