include $(sort $(wildcard $(BR2_EXTERNAL_OXINVR_PATH)/package/*/*.mk))
