"""`python -m fairlora` (and `accelerate launch -m fairlora`) runs the CLI."""

from fairlora.cli import main

if __name__ == "__main__":
    main()
