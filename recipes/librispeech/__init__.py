"""LibriSpeech-layout recipes: prepare, train_spm, train, evaluate, search, export, transcribe."""
