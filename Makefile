# The two quickstart commands: `make demo` and `make test`. Both set up what they need.
.PHONY: setup demo test bench clean

setup:
	deploy/setup.sh

demo: setup
	examples/live-stream/demo.sh

# The whole suite; tests start (once per session) and stop every service they need.
# pytest exit 5 ("no tests collected") is a failure here, never a silent pass.
test: setup
	@.venv/bin/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: setup
	.venv/bin/python bench/filters.py
	.venv/bin/python bench/delivery.py
	.venv/bin/python bench/codec.py
	.venv/bin/python bench/pipeline.py

clean:
	rm -rf .run build *.egg-info
