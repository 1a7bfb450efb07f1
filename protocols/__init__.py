"""Contracts shared by both daemons: ttrpc, Kata protobufs, apf.json, user-data, initdata."""
