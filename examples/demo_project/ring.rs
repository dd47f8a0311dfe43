pub struct Ring {
    items: Vec<u32>,
    head: usize,
}

impl Ring {
    pub fn new(size: usize) -> Self {
        Ring { items: vec![0; size], head: 0 }
    }

    pub fn push(&mut self, value: u32) {
        let n = self.items.len();
        self.items[self.head] = value;
        self.head = advance(self.head, n);
    }
}

fn advance(index: usize, len: usize) -> usize {
    (index + 1) % len
}
