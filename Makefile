.PHONY: run test

# Install, migrate, load a real demo consultation, run the engine and serve on http://127.0.0.1:8000
run:
	bash scripts/run.sh

# The whole test suite (real PostgreSQL and Redis; starts them if they are down)
test:
	bash scripts/test.sh
