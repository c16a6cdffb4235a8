"""Step executors: one per step type, each turning (config, input) into a StepOutcome."""
