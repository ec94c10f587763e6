"""unlearnkit"""
