"""peft_course: parameter-efficient fine-tuning and alignment on GPT-2, one chapter a module."""

__version__ = "0.1.0"
