"""Fides' webserver, as `fides webserver` starts it, but bound to 127.0.0.1 (the CLI
hard-codes 0.0.0.0). The port comes from FIDES_BENCH_PORT."""
import os
from logging import WARNING

from uvicorn import Config, Server

from fides.api.main import CONFIG, app, check_required_webserver_config_values, warn_root_user_enabled

check_required_webserver_config_values(config=CONFIG)
warn_root_user_enabled()
Server(Config(app, host="127.0.0.1", port=int(os.environ["FIDES_BENCH_PORT"]), log_level=WARNING)).run()
