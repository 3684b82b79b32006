"""The broker's network side: listeners, connections, request pipeline, operator HTTP."""
