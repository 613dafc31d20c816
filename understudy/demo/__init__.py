"""``understudy demo``: the whole loop on real data, offline, in a few minutes.

A replay teacher answers Banking77 queries with GPT-4's real answers, a gateway process logs
them, distillation runs train a tiny student and promote it through the eval gates, and the
student takes over the traffic it is sure about. See :func:`gateway.demo.run.run_demo`.
"""
