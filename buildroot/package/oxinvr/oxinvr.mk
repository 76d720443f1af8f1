################################################################################
#
# oxinvr
#
################################################################################

# The source is this repository: the BR2_EXTERNAL tree is its buildroot/ directory.
OXINVR_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(BR2_EXTERNAL_OXINVR_PATH)/../Cargo.toml | head -1)
OXINVR_SITE = $(BR2_EXTERNAL_OXINVR_PATH)/..
OXINVR_SITE_METHOD = local
OXINVR_LICENSE = MIT or Apache-2.0
OXINVR_LICENSE_FILES =
# No rsync of build outputs and local state into the build directory.
OXINVR_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude target --exclude oxinvr-data --exclude .git

ifeq ($(BR2_PACKAGE_OXINVR_PREBUILT),y)

OXINVR_PREBUILT = $(call qstrip,$(BR2_PACKAGE_OXINVR_PREBUILT_PATH))
define OXINVR_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(OXINVR_PREBUILT) $(TARGET_DIR)/usr/bin/oxinvr
endef
$(eval $(generic-package))

else

# Cargo's vendoring runs at download time, which a local package does not have:
# vendor after the rsync instead (this needs the network, like any download).
define OXINVR_CARGO_VENDOR
	cd $(@D) && $(PKG_CARGO_ENV) cargo vendor --locked --versioned-dirs VENDOR > .cargo-vendor.toml
	mkdir -p $(@D)/.cargo && cat $(@D)/.cargo-vendor.toml >> $(@D)/.cargo/config.toml
endef
OXINVR_POST_RSYNC_HOOKS += OXINVR_CARGO_VENDOR

# release-mips: the size-tuned profile of Cargo.toml. The target's std comes
# with Buildroot's host-rust (built from source for mipsel-unknown-linux-musl).
OXINVR_CARGO_BUILD_OPTS = --profile release-mips --bin oxinvr
OXINVR_CARGO_ENV = \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="-C target-feature=+crt-static"

define OXINVR_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release-mips/oxinvr \
		$(TARGET_DIR)/usr/bin/oxinvr
endef
$(eval $(cargo-package))

endif

# EF_MIPS_NAN2008 (0x400) in e_flags, as scripts/lib/mips.sh's mips_set_nan2008.
ifeq ($(BR2_PACKAGE_OXINVR_NAN2008),y)
define OXINVR_SET_NAN2008
	f=$(TARGET_DIR)/usr/bin/oxinvr; \
	flags=$$(od -An -tu4 -j 36 -N 4 $$f | tr -d ' '); \
	new=$$(( flags | 1024 )); \
	printf "$$(printf '\\%03o' $$((new & 255)) $$((new >> 8 & 255)) $$((new >> 16 & 255)) $$((new >> 24 & 255)))" | \
		dd of=$$f bs=1 seek=36 count=4 conv=notrunc status=none
endef
OXINVR_POST_INSTALL_TARGET_HOOKS += OXINVR_SET_NAN2008
endif
