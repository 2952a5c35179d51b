"""Training: configs, chip caches, the evolving-loss schedule (Section 8.4), Horovod ranks, the stall watchdog,
memory settings and the training step that train.py and train_cifar.py share."""
