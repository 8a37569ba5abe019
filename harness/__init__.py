"""scm-bench harness: recipes -> jobs -> runs -> reports. Imports of torch stay inside functions (fast CLI)."""
