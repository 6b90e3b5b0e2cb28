"""Development and deployment tools: `make run` (stack), `make observe` (observe), `make asyncapi` (asyncapi),
the configuration reference (settings_reference). No service imports them; they import the services' shared
code and, where a tool needs it, the services' own declarations."""
