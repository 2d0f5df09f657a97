//! The stage graph: cycle search and an order with every stage after its inputs.

/// Finds a cycle among stages (by index) and returns it as `a -> b -> a`.
pub(super) fn find_cycle(names: &[String], inputs: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: usize,
        inputs: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[node] = Mark::Open;
        stack.push(node);
        for &next in &inputs[node] {
            match marks[next] {
                Mark::Open => {
                    let start = stack.iter().position(|&n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, inputs, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[node] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; names.len()];
    for node in 0..names.len() {
        if marks[node] == Mark::New
            && let Some(mut cycle) = visit(node, inputs, &mut marks, &mut Vec::new())
        {
            // Print in data-flow order: an input before the stage that reads it.
            cycle.reverse();
            return Some(cycle);
        }
    }
    None
}

/// Stage indices with every stage after its inputs.
pub(super) fn topological(inputs: &[Vec<usize>]) -> Vec<usize> {
    let mut order = Vec::with_capacity(inputs.len());
    let mut placed = vec![false; inputs.len()];
    while order.len() < inputs.len() {
        let before = order.len();
        for stage in 0..inputs.len() {
            if !placed[stage] && inputs[stage].iter().all(|&i| placed[i]) {
                placed[stage] = true;
                order.push(stage);
            }
        }
        if order.len() == before {
            break; // a cycle; reported elsewhere
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_printed_in_flow_order() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // a reads c, b reads a, c reads b
        let inputs = vec![vec![2], vec![0], vec![1]];
        let cycle = find_cycle(&names, &inputs).unwrap();
        let described: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
        assert_eq!(described.first(), described.last());
        assert_eq!(described.len(), 4);
    }
}
