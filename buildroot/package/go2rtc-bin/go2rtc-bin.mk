################################################################################
#
# go2rtc-bin
#
################################################################################

# v1.9.10: v1.9.11's mipsel binary is reported to die with "Trace/breakpoint trap"
# on Ingenic cameras (go2rtc issue 1928; newer Go and UPX). Move on only after
# checking a release on the board. The sha256 is in go2rtc-bin.hash.
GO2RTC_BIN_VERSION = 1.9.10
GO2RTC_BIN_SITE = https://github.com/AlexxIT/go2rtc/releases/download/v$(GO2RTC_BIN_VERSION)
GO2RTC_BIN_SOURCE = go2rtc_linux_mipsel
GO2RTC_BIN_LICENSE = MIT

# A bare executable, not an archive.
define GO2RTC_BIN_EXTRACT_CMDS
	cp $(GO2RTC_BIN_DL_DIR)/$(GO2RTC_BIN_SOURCE) $(@D)/go2rtc
endef

define GO2RTC_BIN_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/go2rtc $(TARGET_DIR)/usr/bin/go2rtc
endef

$(eval $(generic-package))
