"""Framework-neutral core: configs, tokenizers, image processor, processor, checkpoint I/O."""
