import sys

from peft_course.cli import main

sys.exit(main())
