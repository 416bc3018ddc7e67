"""CompositeTasking (Nesic et al.) and its Task Switching variant: palette rules, the task representation
block, task composition blocks, the 3-channel outputs and the network."""
