"""The docs' results pages and figures, remade from the code: `python -m peft_course.pages`.

Nothing in the library imports this package; it imports the library. `results` writes the
pages measured on the embedded tiny-gpt2, `real_model` the pages on SmolLM2-135M-Instruct and
real data, `stamp` the line that ends every page, and `__main__` is the command.
"""
