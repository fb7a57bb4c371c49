"""Fine-tuning with the paper's losses and simulated interactive rounds (appendix A)."""
