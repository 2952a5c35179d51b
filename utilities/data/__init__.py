"""Data: LEVIR-CD/WHU/own-pair samples, chips, the boundary and distance targets, augmentation, CIFAR-10 and
synthetic scenes (paper Sections 8.1-8.3, Appendix A)."""
