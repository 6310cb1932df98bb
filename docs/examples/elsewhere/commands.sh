peft-course finetune --method lora --max-examples 40 --epochs 1 --output runs/lora-reviews
peft-course export runs/lora-reviews exported/lora-reviews --merged
tensorboard --inspect --logdir runs
